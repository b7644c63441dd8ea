"""The HTTP API: request types, handlers, the route table, OpenAPI generation."""
