//! Bus name, object paths, and the escaping of plugin names into path elements.

/// The well-known bus name.
pub const BUS_NAME: &str = "org.dynplug.Manager";
/// The manager object.
pub const MANAGER_PATH: &str = "/org/dynplug/Manager";
/// Parent of the per-plugin objects.
pub const PLUGINS_PATH: &str = "/org/dynplug/Manager/plugins";

/// The object path of plugin `name`. Plugin names are `[a-z0-9][a-z0-9_-]*`; object path
/// elements allow only `[A-Za-z0-9_]`, so `-` and `_` are escaped as `_2d` and `_5f`, as
/// systemd escapes unit names (`hello-world` becomes `hello_2dworld`).
pub fn plugin_path(name: &str) -> String {
    let mut path = String::with_capacity(PLUGINS_PATH.len() + 1 + name.len() * 2);
    path.push_str(PLUGINS_PATH);
    path.push('/');
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            path.push(c);
        } else {
            path.push_str(&format!("_{:02x}", u32::from(c)));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(plugin_path("echo"), "/org/dynplug/Manager/plugins/echo");
        assert_eq!(
            plugin_path("a-b_c"),
            "/org/dynplug/Manager/plugins/a_2db_5fc"
        );
        assert!(zbus::ObjectPath::try_from(plugin_path("0-x_")).is_ok());
    }
}
