//! Placeholder until the client issue: the interactive client under tmux.
