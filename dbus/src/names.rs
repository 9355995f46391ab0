//! Bus name, object paths, and the escaping of plugin names into path elements.

/// The well-known bus name.
pub const BUS_NAME: &str = "org.dynplug.Manager";
/// The manager object.
pub const MANAGER_PATH: &str = "/org/dynplug/Manager";
/// Parent of the per-plugin objects.
pub const PLUGINS_PATH: &str = "/org/dynplug/Manager/plugins";

/// The path under which job objects live: `JOBS_PATH/N`.
pub const JOBS_PATH: &str = "/org/dynplug/Manager/jobs";

/// The object path of job `id`.
pub fn job_path(id: u64) -> String {
    format!("{JOBS_PATH}/{id}")
}

/// The job number in a job's object path (or a bare number, as users type it).
pub fn job_id(path_or_id: &str) -> Option<u64> {
    let tail = path_or_id
        .strip_prefix(JOBS_PATH)
        .and_then(|t| t.strip_prefix('/'))
        .unwrap_or(path_or_id);
    tail.parse().ok()
}

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
        assert_eq!(job_path(7), "/org/dynplug/Manager/jobs/7");
        assert_eq!(job_id(&job_path(7)), Some(7));
        assert_eq!(job_id("12"), Some(12));
        assert_eq!(job_id("/org/dynplug/Manager/plugins/7"), None);
    }
}
