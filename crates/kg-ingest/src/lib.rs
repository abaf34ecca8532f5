//! kg-ingest: Files to documents and chunks: PDF, text, Markdown, CSV-mapped graph rows.
