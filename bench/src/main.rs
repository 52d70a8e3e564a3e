//! Strata's benchmark harness (scenarios are added per issue).
fn main() {}
