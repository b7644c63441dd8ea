"""Read models: the projector that writes them and the queries the API reads."""
