//! Compiles `ftgo/**/*.proto` with protox (pure Rust, so no system `protoc`) and
//! writes the encoded descriptor set to OUT_DIR for reflection and prost-reflect.
//!
//! The set is encoded by protox itself (`encode_file_descriptor_set`), not through
//! `prost_types`: prost drops unknown fields, and the custom options of
//! `ftgo/messaging/v1/options.proto` (the queue of every saga message) are
//! extension fields of `MessageOptions` that `proto::contract` reads back.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "ftgo/messaging/v1/options.proto",
    "ftgo/common/v1/common.proto",
    "ftgo/consumer/v1/consumer.proto",
    "ftgo/restaurant/v1/restaurant.proto",
    "ftgo/accounting/v1/accounting.proto",
    "ftgo/order/v1/order.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=ftgo");
    let mut compiler = protox::Compiler::new(["."])?;
    compiler.include_source_info(true).include_imports(true).open_files(PROTOS)?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("ftgo_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    let fds = compiler.file_descriptor_set();

    let mut config = prost_build::Config::new();
    // Type names let the transport put the fully-qualified message name in the
    // AMQP `type` property without a hand-kept table.
    config.enable_type_names();
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds_with_config(fds, config)?;
    Ok(())
}
