//! Dockerfile frontend: parser with spans, shell-word expansion, stage model, .dockerignore (pure, no I/O)
#![forbid(unsafe_code)]
