"""Pure domain logic: decide(state, command) -> events, evolve(state, event) -> state. No I/O."""
