//! The end-to-end scenarios (`genesys_keepalive_testkit::scenarios`) against the tokio driver.
//!
//! Every `tracing` event of the process is captured in memory (and checked for credentials by the
//! scenarios); set `E2E_LOG=1` to also see it on stderr.

mod tokio_support;

genesys_keepalive_testkit::e2e_suite!(tokio_support::Tokio::new());
