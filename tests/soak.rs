//! Placeholder until the hardening issue: the bounded soak runner.
