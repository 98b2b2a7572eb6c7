use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use kiln::transform::{load_spec, make_backend, transform_file, write_atomic, BackendChoice};
use kiln_core::{npy, Pipeline};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Turn raw audio and images into training-ready tensors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a transform spec on one file and write the result as a NumPy .npy file.
    Transform {
        /// Transform spec (JSON: {"ops": [...]}).
        #[arg(long)]
        spec: PathBuf,
        /// Input WAV, PNG or JPEG file.
        input: PathBuf,
        /// Output .npy path (written atomically).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "cpu")]
        backend: BackendChoice,
    },
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Transform {
            spec,
            input,
            output,
            backend,
        } => {
            let pipeline = Pipeline::new(load_spec(&spec)?);
            let backend = make_backend(backend)?;
            let tensor = transform_file(&pipeline, backend.as_ref(), &input)?;
            write_atomic(&output, &npy::encode(&tensor))?;
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(
                stdout,
                "{} -> {} {:?} {}",
                input.display(),
                output.display(),
                tensor.shape,
                tensor.dtype().name()
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
