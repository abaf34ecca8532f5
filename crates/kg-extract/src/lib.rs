//! kg-extract: Entity and relation extraction through any OpenAI-compatible chat API, with entity resolution.
