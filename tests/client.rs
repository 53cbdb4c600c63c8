//! Placeholder until the client issue.
