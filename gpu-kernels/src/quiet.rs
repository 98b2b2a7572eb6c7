//! Why GPU runs print `error: XDG_RUNTIME_DIR is invalid or not set in the environment.`, and
//! what a binary can do about it.
//!
//! The line comes from libwayland, called by Mesa's Vulkan device-select layer
//! (`VK_LAYER_MESA_device_select`, an implicit layer every Mesa install enables). When an
//! application enables `VK_KHR_wayland_surface` on its instance, the layer connects to the
//! Wayland compositor in `vkEnumeratePhysicalDevices` to find the display's GPU; with
//! `XDG_RUNTIME_DIR` unset that connection fails, loudly. wgpu enables every surface extension
//! the loader offers and asks for the devices twice (count, then fill), hence two lines per
//! backend opened. wgpu has no option to leave the extension out, and building the Vulkan
//! instance ourselves would take `unsafe`.
//!
//! The layer's own switch is the environment variable `NODEVICE_SELECT=1`. The environment
//! must not be changed once threads run (other threads may read it), so a library cannot do
//! it; a binary does, first thing in `main`:
//!
//! ```no_run
//! if let Some((name, value)) = kiln_gpu::quiet_vulkan_env() {
//!     // Before any thread starts: setting the environment is not thread-safe.
//!     std::env::set_var(name, value);
//! }
//! ```

/// The variable (and value) a binary should set before it starts any thread so that opening
/// the GPU prints no Wayland noise, or `None` when nothing needs setting.
///
/// `Some(("NODEVICE_SELECT", "1"))` only when `XDG_RUNTIME_DIR` is unset (then no Wayland
/// compositor is reachable, so the layer's probe cannot help) and the user has not configured
/// the layer (`NODEVICE_SELECT`, `MESA_VK_DEVICE_SELECT`, `DRI_PRIME`). Turning the layer off
/// only drops its reordering of GPUs; kiln picks the adapter by power preference anyway.
pub fn quiet_vulkan_env() -> Option<(&'static str, &'static str)> {
    quiet_env(|name| std::env::var_os(name).is_some())
}

fn quiet_env(is_set: impl Fn(&str) -> bool) -> Option<(&'static str, &'static str)> {
    let wayland_probe = cfg!(all(unix, not(target_os = "macos"), not(target_os = "android")));
    let configured = ["NODEVICE_SELECT", "MESA_VK_DEVICE_SELECT", "DRI_PRIME"]
        .iter()
        .any(|name| is_set(name));
    (wayland_probe && !is_set("XDG_RUNTIME_DIR") && !configured).then_some(("NODEVICE_SELECT", "1"))
}

#[cfg(all(test, unix, not(target_os = "macos"), not(target_os = "android")))]
mod tests {
    use super::quiet_env;

    #[test]
    fn only_without_a_runtime_dir_and_without_user_settings() {
        let env = |set: &'static [&'static str]| move |name: &str| set.contains(&name);
        assert_eq!(quiet_env(env(&[])), Some(("NODEVICE_SELECT", "1")));
        assert_eq!(quiet_env(env(&["DISPLAY"])), Some(("NODEVICE_SELECT", "1")));
        assert_eq!(quiet_env(env(&["XDG_RUNTIME_DIR"])), None);
        assert_eq!(quiet_env(env(&["NODEVICE_SELECT"])), None);
        assert_eq!(quiet_env(env(&["DRI_PRIME"])), None);
        assert_eq!(quiet_env(env(&["MESA_VK_DEVICE_SELECT"])), None);
    }
}
