//! chatbench reports: the comparison table, charts and the regression gate.
//!
//! Reports read results files only; they never reach back into the load generator or the
//! servers. Nothing is built here yet: see issues 6 (compare) and 7 (gate).
