//! `translation-status`: wait for, watch, read and create video-translation jobs from a shell.
//!
//! ```sh
//! cargo install --path cli
//! translation-status wait j-42 --base-url http://127.0.0.1:8080 --deadline 10m --json
//! HEYGEN_API_KEY=... translation-status wait <video_translate_id> --api heygen-v2
//! translation-status create --api heygen-v3 --video-url https://... --language German --language Japanese
//! ```
//!
//! Every subcommand reads the job API through a status profile of the SDK: a built-in
//! (`--api`), or a file (`--profile-file`). The API key is read from the environment only
//! (`--api-key-env VAR`, or the profile's own variable, such as `HEYGEN_API_KEY`) and never
//! printed.
//!
//! `--json` prints exactly one line on stdout. For `wait` and `watch`: `outcome`
//! (`completed`, `failed`, `canceled`, `gave_up`, `error`), `state` (the service's own word),
//! `mechanism`, `requests`, `retries`, `elapsed_ms`, `detection_delay_ms`, `result_url`,
//! `message`. Exit status: 0 completed, 1 failed or canceled, 2 gave up or could not wait (or
//! a bad argument); `status` and `create` exit 0 when they did what they were asked, 2 when
//! not. `--help` everywhere.
//!
//! `wait` and `watch` keep what they learn about job durations per profile and host in the
//! user's cache directory, so the next run does not start cold (`--no-learn` to opt out;
//! see `learn`).
//!
//! `main` only parses and maps the outcome to an exit status; the commands are in `commands`,
//! the arguments in `args`, what is printed in `summary`.

mod args;
mod commands;
mod learn;
mod summary;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = args::Cli::parse();
    ExitCode::from(commands::run(cli).await)
}
