//! The end-to-end scenarios (`genesys_keepalive_testkit::scenarios`) against the async-std driver under
//! smol (`smol::block_on`, tasks on smol's executor).

mod async_std_support;

genesys_keepalive_testkit::e2e_suite!(async_std_support::FuturesDriver::smol());
