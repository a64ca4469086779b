//! The leafd daemon; all logic lives in the library.

fn main() -> std::process::ExitCode {
    leafd::daemon::main()
}
