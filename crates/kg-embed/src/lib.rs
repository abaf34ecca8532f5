//! kg-embed: Chunk and entity embeddings: OpenAI-compatible APIs or a local sentence-transformers model.
