// The unmodified `openai` Node SDK against threadline serve: createAndPoll, streaming with
// tool-call deltas, function calling and file upload. Prints one JSON object; exits non-zero on failure.
import OpenAI, { toFile } from 'openai';

const client = new OpenAI({ baseURL: `${process.env.THREADLINE_URL}/v1`, apiKey: process.env.THREADLINE_KEY });
const script = process.env.THREADLINE_SCRIPT_PATH;
const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
const out = {};

// create/poll with the echo model
const echo = await client.beta.assistants.create({ model: 'builtin/echo', name: 'echo' });
const thread = await client.beta.threads.create({ messages: [{ role: 'user', content: 'hello from node' }] });
const run = await client.beta.threads.runs.createAndPoll(thread.id, { assistant_id: echo.id });
const msgs = await client.beta.threads.messages.list(thread.id, { order: 'desc' });
out.poll = { status: run.status, reply: msgs.data[0].content[0].text.value };

// function calling: requires_action -> submitToolOutputs -> completed
const tooly = await client.beta.assistants.create({ model: `builtin/script:${script}`, tools });
const t2 = await client.beta.threads.create({ messages: [{ role: 'user', content: 'weather?' }] });
let r2 = await client.beta.threads.runs.createAndPoll(t2.id, { assistant_id: tooly.id });
const firstStatus = r2.status;
const call = r2.required_action.submit_tool_outputs.tool_calls[0];
r2 = await client.beta.threads.runs.submitToolOutputsAndPoll(r2.id, {
  thread_id: t2.id, tool_outputs: [{ tool_call_id: call.id, output: 'sunny' }] });
const m2 = await client.beta.threads.messages.list(t2.id, { order: 'desc' });
out.tools = { first: firstStatus, name: call.function.name, arguments: call.function.arguments,
  status: r2.status, reply: m2.data[0].content[0].text.value };

// streaming with tool-call deltas
const t3 = await client.beta.threads.create({ messages: [{ role: 'user', content: 'weather?' }] });
let args = ''; let fragments = 0; let deltas = 0; const events = [];
const stream = client.beta.threads.runs.stream(t3.id, { assistant_id: tooly.id })
  .on('event', (e) => events.push(e.event))
  // The SDK reports a call's first delta as toolCallCreated (its snapshot holds that delta's
  // arguments, "" from OpenAI) and only the later ones as toolCallDelta, so both are accumulated.
  .on('toolCallCreated', (call) => {
    if (call.type === 'function' && call.function?.arguments) { args += call.function.arguments; fragments += 1; }
  })
  .on('toolCallDelta', (delta) => {
    if (delta.type === 'function' && delta.function?.arguments) { args += delta.function.arguments; fragments += 1; deltas += 1; }
  });
const final = await stream.finalRun();
out.stream = { status: final.status, arguments: args, fragments, toolCallDeltaEvents: deltas,
  full: final.required_action?.submit_tool_outputs.tool_calls[0].function.arguments, events };

// file upload
const file = await client.files.create({ file: await toFile(Buffer.from('hello file'), 'notes.txt'), purpose: 'assistants' });
const got = await client.files.retrieve(file.id);
const content = await (await client.files.content(file.id)).text();
out.file = { id: file.id, filename: got.filename, bytes: got.bytes, purpose: got.purpose, content };

// the Uploads API: create, two parts, complete (the Node SDK has no chunking helper; this is what one does)
const upload = await client.uploads.create({ bytes: 11, filename: 'parts.txt', mime_type: 'text/plain', purpose: 'assistants' });
const first = await client.uploads.parts.create(upload.id, { data: await toFile(Buffer.from('hello '), 'p1') });
const second = await client.uploads.parts.create(upload.id, { data: await toFile(Buffer.from('world'), 'p2') });
const done = await client.uploads.complete(upload.id, { part_ids: [first.id, second.id] });
out.upload = { status: done.status, fileId: done.file?.id, bytes: done.file?.bytes,
  content: await (await client.files.content(done.file.id)).text() };

console.log(JSON.stringify(out));
