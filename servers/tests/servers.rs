//! Runs the conformance suite (`tests/conformance/`) against every architecture, and against a
//! 3-node cluster per backplane.

mod conformance;

use chatbench_servers::Arch;
use conformance::{Backplane, Sut};

conformance_tests!(task_per_conn, Arch::TaskPerConn);
conformance_tests!(thread_pool, Arch::ThreadPool);
conformance_tests!(epoll, Arch::Epoll);
// A cluster of 3 nodes, each case's clients spread over them.
conformance_tests!(cluster_mesh, Sut::Cluster(Backplane::Mesh));
conformance_tests!(cluster_redis, Sut::Cluster(Backplane::Redis));
