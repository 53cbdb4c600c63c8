//! Placeholder until the hardening issue: fault and abuse cases.
