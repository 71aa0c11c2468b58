//! `genesys-keepalive bench` (placeholder while being written).
use clap::Args;

use crate::failure::Failure;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {}

pub fn main(_args: BenchArgs) -> Result<u8, Failure> {
    Err(Failure::internal("not yet"))
}
