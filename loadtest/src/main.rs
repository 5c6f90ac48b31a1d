//! `loadtest`: the harness that drives the SDK against the simulator and compares waiting
//! strategies by request count and time-to-detection.

fn main() {
    eprintln!(
        "loadtest: not implemented yet; run the simulator with `cargo run -p translation-sim`"
    );
    std::process::exit(2);
}
