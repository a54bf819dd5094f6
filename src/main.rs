fn main() -> std::process::ExitCode {
    orion::cli::main()
}
