//! The `kiln` binary: everything lives in the library; `cli/` maps arguments onto it.

mod cli;

fn main() -> std::process::ExitCode {
    // Before any thread starts (setting the environment is not thread-safe): keep Mesa's
    // device-select layer from printing Wayland noise on machines without a session.
    if let Some((name, value)) = kiln_gpu::quiet_vulkan_env() {
        std::env::set_var(name, value);
    }
    cli::main()
}
