//! Runs the conformance suite (`tests/conformance/`) against every architecture, and against a
//! 3-node cluster per backplane.

mod conformance;

use chatbench_servers::Arch;
use conformance::{Backplane, External, Sut};

conformance_tests!(task_per_conn, Arch::TaskPerConn);
conformance_tests!(thread_pool, Arch::ThreadPool);
conformance_tests!(epoll, Arch::Epoll);
// A cluster of 3 nodes, each case's clients spread over them.
conformance_tests!(cluster_mesh, Sut::Cluster(Backplane::Mesh));
conformance_tests!(cluster_redis, Sut::Cluster(Backplane::Redis));
// The Elixir peer (servers/peers/elixir/) as its own process: needs elixir, erlang-cowlib and
// erlang-jiffy (scripts/test.sh installs them); fails with that message when they are missing.
conformance_tests!(elixir, Sut::External(External::Elixir));
// 3 nodes of it joined with distributed Erlang (own epmd on loopback, a cookie per case).
conformance_tests!(elixir_cluster, Sut::External(External::ElixirCluster));

/// Every case a not-applicable list names is a real case (a renamed case cannot hide there).
#[test]
fn not_applicable_lists_real_cases() {
    let source = include_str!("conformance/mod.rs");
    for (case, why) in conformance::ELIXIR_NOT_APPLICABLE {
        assert!(
            source.contains(&format!("pub fn {case}(")),
            "no case {case}"
        );
        assert!(!why.is_empty(), "{case}: give the reason");
    }
}
