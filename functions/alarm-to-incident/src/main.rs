//! Placeholder entry point; the function is built in its own issue.
fn main() {}
