//! kg-fake-llm: an OpenAI-compatible fake server for tests.
