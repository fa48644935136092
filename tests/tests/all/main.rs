//! Integration tests: real guest components through the real runtime, real
//! SQLite, real wasmtime. One module per guest (the build fails when a guest
//! in `agents/` or `tests/guests/` has none), plus cross-cutting suites.

mod support;

// One module per guest.
mod arm_reach;
mod calculator;
mod cartpole_pid;
mod cartpole_policy;
mod chat;
mod counter;
mod deep_recursion;
mod echo_tool;
mod hello;
mod host_call_flood;
mod http_fetch;
mod huge_output;
mod memory_bomb;
mod nested_tool;
mod net_connect;
mod nn_classify;
mod notes;
mod planner;
mod probe;
mod rag;
mod retrieval;
mod rogue_controller;
mod spin;
mod spin1_llm;
mod spin_http_llm;
mod storage_mix;
mod tool_caller;
mod units;

// Cross-cutting suites.
mod isolation;
mod loading;
mod persistence;
mod polyglot;
mod tensor_models;

/// Fails to compile when a guest has no test module of its name.
macro_rules! assert_guest_has_test {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}
sovra_test_artifacts::foreach_guest!(assert_guest_has_test);
