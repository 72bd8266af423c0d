//! `stdac-device`: the firmware binary for a Linux board.

use clap::Parser;
use stdac_device::cli::{self, DeviceArgs};

#[derive(Parser)]
#[command(
    name = "stdac-device",
    version,
    about = "stdac edge firmware: serves the stdac protocol on a serial port"
)]
struct Cli {
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = cli::run(&cli.device) {
        eprintln!("stdac-device: error: {error:#}");
        std::process::exit(1);
    }
}
