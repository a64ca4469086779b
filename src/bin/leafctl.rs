//! leafctl, the leafd CLI; all logic lives in the library.

fn main() -> std::process::ExitCode {
    leafd::ctl::main()
}
