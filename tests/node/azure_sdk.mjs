// The unmodified @azure/ai-agents SDK against threadline serve: createAndPoll, stream event
// iteration with tool-call deltas, function calling and file upload. Prints one JSON object.
//
// azure-core refuses a TokenCredential over plain http ("Bearer token authentication is not
// permitted for non-TLS protected (non-https) URLs"), and AgentsClient drops the
// `credentials.apiKeyHeaderName` a key credential would need. So the client gets no credential and
// a per-call pipeline policy that sets `Authorization: Bearer <key>` (the JS twin of wire-api §1.2).
import { Readable } from 'node:stream';
import { AgentsClient } from '@azure/ai-agents';

const bearer = (key) => ({
  name: 'threadlineBearerKey',
  sendRequest(request, next) { request.headers.set('Authorization', `Bearer ${key}`); return next(request); },
});
const endpoint = `${process.env.THREADLINE_URL}/api/projects/${process.env.THREADLINE_PROJECT}`;
const client = new AgentsClient(endpoint, undefined, {
  additionalPolicies: [{ policy: bearer(process.env.THREADLINE_KEY), position: 'perCall' }],
  allowInsecureConnection: true,
});
const script = process.env.THREADLINE_SCRIPT_PATH;
const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
const out = {};

async function lastReply(threadId) {
  for await (const m of client.messages.list(threadId, { order: 'desc' })) return m.content[0].text.value;
}

// create/poll with the echo model
const echo = await client.createAgent('builtin/echo', { name: 'echo' });
const thread = await client.threads.create({ messages: [{ role: 'user', content: 'hello from azure node' }] });
const run = await client.runs.createAndPoll(thread.id, echo.id, { pollingOptions: { intervalInMs: 100 } }).pollUntilDone();
out.poll = { status: run.status, reply: await lastReply(thread.id) };

// function calling: requires_action -> submitToolOutputs -> completed
const tooly = await client.createAgent(`builtin/script:${script}`, { name: 'tools', tools });
const t2 = await client.threads.create({ messages: [{ role: 'user', content: 'weather?' }] });
// createAndPoll in @azure/ai-agents 1.1.0 counts requires_action as "running" and would poll for
// ever, so a function-calling run is created and polled with runs.get.
const waitFor = async (run, done) => {
  const deadline = Date.now() + 20000;
  while (!done.includes(run.status) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    run = await client.runs.get(run.threadId, run.id);
  }
  return run;
};
let r2 = await waitFor(await client.runs.create(t2.id, tooly.id), ['requires_action', 'completed', 'failed', 'cancelled', 'expired']);
const firstStatus = r2.status;
const call = r2.requiredAction.submitToolOutputs.toolCalls[0];
await client.runs.submitToolOutputs(t2.id, r2.id, [{ toolCallId: call.id, output: 'sunny' }]);
r2 = await waitFor(r2, ['completed', 'failed', 'cancelled', 'expired']);
out.tools = { first: firstStatus, name: call.function.name, arguments: call.function.arguments,
  status: r2.status, reply: await lastReply(t2.id) };

// streaming: iterate the event stream, accumulating the function-call argument deltas
const t3 = await client.threads.create({ messages: [{ role: 'user', content: 'weather?' }] });
const stream = await client.runs.create(t3.id, tooly.id).stream();
let args = ''; let fragments = 0; let final; const events = [];
for await (const e of stream) {
  events.push(e.event);
  if (e.event === 'thread.run.step.delta') {
    for (const tc of e.data.delta?.stepDetails?.toolCalls ?? []) {
      if (tc.type === 'function' && tc.function?.arguments) { args += tc.function.arguments; fragments += 1; }
    }
  }
  if (e.event === 'thread.run.requires_action') final = e.data;
}
out.stream = { status: final?.status, arguments: args, fragments,
  full: final?.requiredAction?.submitToolOutputs.toolCalls[0].function.arguments, events };

// file upload
const file = await client.files.uploadAndPoll(Readable.from([Buffer.from('hello file')]), 'assistants',
  { fileName: 'notes.txt', pollingOptions: { intervalInMs: 100 } }).pollUntilDone();
const got = await client.files.get(file.id);
out.file = { id: file.id, filename: got.filename, bytes: got.bytes, purpose: got.purpose, status: got.status };

console.log(JSON.stringify(out));
