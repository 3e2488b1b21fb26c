//! Runs the conformance suite (`tests/conformance/`) against every architecture.

mod conformance;

use chatbench_servers::Arch;

conformance_tests!(task_per_conn, Arch::TaskPerConn);
conformance_tests!(thread_pool, Arch::ThreadPool);
conformance_tests!(epoll, Arch::Epoll);
