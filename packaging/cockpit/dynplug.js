/*
 * DynPlug's Cockpit page: dynplugd over the system bus, as the logged-in user.
 *
 * Every call goes through cockpit.dbus with the user's own D-Bus identity (or root's
 * while Cockpit's administrative access is on), so polkit decides exactly as for
 * dynplugctl and a refusal is shown with the daemon's message, which names the action.
 * Everything a plugin supplies (names, descriptions, errors, events, output) is set
 * with textContent and never parsed as HTML.
 */
"use strict";

const BUS = "org.dynplug.Manager";
const MANAGER = "/org/dynplug/Manager";
const IFACE = "org.dynplug.Manager";
const JOB_IFACE = "org.dynplug.Job";
const PROPS = "org.freedesktop.DBus.Properties";
const MAX_EVENTS = 200;
const REFRESH_MS = 5000;

const client = cockpit.dbus(BUS, { bus: "system", superuser: "try" });
const systemd = cockpit.dbus("org.freedesktop.systemd1", { bus: "system" });

const byId = (id) => document.getElementById(id);

/** A new element whose content is `text`, as text. */
function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
}

/** The value of a D-Bus variant as cockpit.js gives it ({t, v}), or the value itself. */
function unwrap(value) {
    if (value && typeof value === "object" && "t" in value && "v" in value) return value.v;
    return value;
}

/** Unwraps every variant of an a{sv} dictionary. */
function unwrapDict(dict) {
    const out = {};
    for (const key of Object.keys(dict || {})) out[key] = unwrap(dict[key]);
    return out;
}

/** Calls `method` on the manager (or `iface` at `path`); resolves to its out arguments. */
function call(method, signature, args, path, iface) {
    const options = signature ? { type: signature } : {};
    return client.call(path || MANAGER, iface || IFACE, method, args || [], options);
}

function showError(what, ex) {
    const alert = byId("alert");
    // A D-Bus error carries the daemon's message (polkit's reason included); a channel
    // problem (e.g. "not-found": nobody owns the name) gets Cockpit's wording.
    alert.textContent = what + ": " + (ex && ex.message ? ex.message : cockpit.message(ex));
    alert.hidden = false;
}

function clearError() {
    const alert = byId("alert");
    alert.hidden = true;
    alert.textContent = "";
}

function formatCpu(usec) {
    return usec === undefined ? "" : (usec / 1e6).toFixed(2) + " s";
}

function formatBytes(bytes) {
    return bytes === undefined ? "" : (bytes / 1048576).toFixed(1) + " MiB";
}

function formatTime(usec) {
    return new Date(Number(usec) / 1000).toLocaleTimeString();
}

/* ---- live events ---------------------------------------------------------------- */

function addEvent(kind, text) {
    const list = byId("events");
    const item = el("li");
    item.dataset.kind = kind;
    item.append(el("time", new Date().toLocaleTimeString() + " "), el("strong", kind + " "), el("span", text));
    list.prepend(item);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function onManagerSignal(path, iface, member, args) {
    switch (member) {
    case "PluginEvent":
        addEvent("event", args[0] + " " + args[1] + ": " + args[2]);
        return;
    case "PluginStateChanged":
        addEvent("state", args[0] + (args[1] ? " enabled" : " disabled") + (args[2] ? ", loaded" : ", not loaded"));
        break;
    case "PluginFailed":
        addEvent("failed", args[0] + ": " + args[1]);
        break;
    case "ServiceStateChanged":
        addEvent("service", args[0] + " " + args[1] + (args[2] ? " (" + args[2] + ")" : ""));
        break;
    case "ConfigReloaded":
        addEvent("reload", (args[0] ? "succeeded: " : "failed: ") + args[1]);
        break;
    default:
        return;
    }
    scheduleRefresh();
}

function onJobSignal(path, iface, member, args) {
    if (member !== "Finished") return;
    addEvent("job", path.split("/").pop() + " finished " + args[0]);
    if (job && job.path === path) fetchJob(job).catch(() => renderJob({ State: args[0] }));
}

/* ---- service and plugin table ---------------------------------------------------- */

let unitProxy = null;

function renderUnit() {
    if (!unitProxy || !unitProxy.valid) return;
    const cell = byId("service-state");
    cell.textContent = "dynplugd.service " + unitProxy.ActiveState + " (" + unitProxy.SubState + ")";
    cell.className = "state-" + unitProxy.ActiveState;
}

function watchUnit() {
    systemd.call("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "LoadUnit",
                 ["dynplugd.service"], { type: "s" })
            .then(([path]) => {
                unitProxy = systemd.proxy("org.freedesktop.systemd1.Unit", path);
                unitProxy.addEventListener("changed", renderUnit);
                return unitProxy.wait();
            })
            .then(renderUnit)
            .catch((ex) => { byId("service-state").textContent = "unknown (" + ex.message + ")" });
}

const rows = new Map();
let selected = null;

/** The table row of plugin `name`, made on first use. */
function rowFor(name) {
    let row = rows.get(name);
    if (row) return row;
    row = el("tr");
    row.dataset.plugin = name;
    const nameCell = el("td");
    const link = el("button", name, "link");
    link.type = "button";
    link.addEventListener("click", () => selectPlugin(name));
    nameCell.append(link);
    row.append(nameCell);
    for (const field of ["state", "isolation", "version", "signature", "calls", "errors", "cpu", "rss"]) {
        const cell = el("td", "", ["calls", "errors", "cpu", "rss"].includes(field) ? "num" : "");
        cell.dataset.field = field;
        row.append(cell);
    }
    const actions = el("td");
    const toggle = el("button", "Disable", "secondary toggle");
    toggle.type = "button";
    toggle.addEventListener("click", () => toggleEnabled(name, toggle.dataset.enabled === "true"));
    actions.append(toggle);
    row.append(actions);
    rows.set(name, row);
    return row;
}

function setCell(row, field, text) {
    row.querySelector('td[data-field="' + field + '"]').textContent = text;
}

function renderRow([name, version, , enabled, loaded], details) {
    const row = rowFor(name);
    const state = (details.State || (loaded ? "loaded" : "failed")) + (enabled ? ", enabled" : ", disabled");
    setCell(row, "state", state);
    setCell(row, "isolation", details.Isolation || "");
    setCell(row, "version", version);
    setCell(row, "signature", details.Signature || "");
    setCell(row, "calls", details.Calls ?? "");
    setCell(row, "errors", details.Errors ?? "");
    const isolated = details.Isolation === "process";
    setCell(row, "cpu", isolated ? formatCpu(details.WorkerCpuUsec) : "in daemon");
    setCell(row, "rss", isolated ? formatBytes(details.WorkerRssBytes) : "in daemon");
    row.classList.toggle("selected", name === selected);
    const toggle = row.querySelector("button.toggle");
    toggle.dataset.enabled = String(enabled);
    toggle.textContent = enabled ? "Disable" : "Enable";
    toggle.setAttribute("aria-label", (enabled ? "Disable " : "Enable ") + name);
    return row;
}

function renderManager(props) {
    byId("daemon-version").textContent = props.Version;
    byId("daemon-state").textContent = props.State + (props.LastReloadError ? " (last reload failed: " + props.LastReloadError + ")" : "") +
        ", CPU " + formatCpu(props.CpuUsageUsec) + ", RSS " + formatBytes(props.MemoryRssBytes);
    byId("daemon-counts").textContent = props.PluginCount + " known, " + props.EnabledCount + " enabled, " + props.FailedCount + " failed";
}

function renderJobPlugins(names) {
    const select = byId("job-plugin");
    const current = select.value;
    const existing = Array.from(select.options, (o) => o.value);
    if (existing.join("\n") === names.join("\n")) return;
    select.replaceChildren(...names.map((n) => { const o = el("option", n); o.value = n; return o }));
    if (names.includes(current)) select.value = current;
}

async function refresh() {
    try {
        const [props] = await call("GetAll", "s", [IFACE], MANAGER, PROPS);
        renderManager(unwrapDict(props));
        const [list] = await call("ListPlugins");
        const details = await Promise.all(list.map(([name]) =>
            call("GetPlugin", "s", [name]).then(([d]) => unwrapDict(d), () => ({}))));
        const body = byId("plugins").tBodies[0];
        const wanted = list.map((entry, i) => renderRow(entry, details[i]));
        body.replaceChildren(...wanted);
        for (const name of Array.from(rows.keys())) {
            if (!list.some(([n]) => n === name)) rows.delete(name);
        }
        renderJobPlugins(list.filter(([, , , enabled, loaded]) => enabled && loaded).map(([n]) => n));
        document.body.dataset.loaded = "true";
        if (selected) await renderDetails(selected);
    } catch (ex) {
        showError("Cannot reach dynplugd", ex);
    }
}

let refreshTimer = null;

/** Refreshes soon, once for a burst of signals. */
function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = window.setTimeout(() => { refreshTimer = null; refresh() }, 200);
}

async function toggleEnabled(name, enabled) {
    const verb = enabled ? "Disable" : "Enable";
    clearError();
    try {
        await call(verb + "Plugin", "s", [name]);
    } catch (ex) {
        showError(verb + " " + name, ex);
    }
    await refresh();
}

/* ---- details ---------------------------------------------------------------------- */

function fillDl(dl, pairs) {
    dl.replaceChildren();
    for (const [key, value] of pairs) {
        if (value === undefined || value === null || value === "") continue;
        dl.append(el("dt", key), el("dd", value));
    }
}

async function renderDetails(name) {
    const [raw] = await call("GetPlugin", "s", [name]);
    const d = unwrapDict(raw);
    byId("details-title").textContent = "Plugin " + name;
    fillDl(byId("details-meta"), [
        ["Description", d.Description], ["Version", d.Version], ["Path", d.Path],
        ["State", d.State], ["Enabled", String(d.Enabled)], ["ABI version", d.AbiVersion],
        ["Service", d.Service ? "yes, " + (d.ServiceState || "") : "no"],
        ["Isolation", d.Isolation], ["Call path", d.CallPath], ["Workers", d.Workers],
        ["Worker restarts", d.WorkerRestarts], ["Worker crashes", d.WorkerCrashes],
        ["Quarantined", d.Quarantined === undefined ? undefined : String(d.Quarantined)],
        ["Timeout", d.TimeoutMs === undefined ? undefined : d.TimeoutMs + " ms"],
        ["Max concurrency", d.MaxConcurrency], ["Version requirement", d.VersionRequirement],
        ["Signature", d.Signature], ["Calls", d.Calls], ["Errors", d.Errors], ["Timeouts", d.Timeouts],
        ["Last call", d.LastUs === undefined ? undefined : d.LastUs + " µs"],
    ]);
    fillDl(byId("details-sandbox"), Object.entries(d.Sandbox || {}));
    let schema = d.SettingsSchema || "";
    try {
        if (schema) schema = JSON.stringify(JSON.parse(schema), null, 2);
    } catch (ex) { /* shown as given */ }
    byId("details-schema").textContent = schema;
    byId("details-error").textContent = d.Error || d.LastError || "";
}

/** The plugin's recent journal lines: journalctl's JSON, as Cockpit's own pages read it. */
function renderJournal(name) {
    const pre = byId("details-journal");
    pre.textContent = "";
    cockpit.spawn(["journalctl", "--no-pager", "--output=json", "--lines=30", "DYNPLUG_PLUGIN=" + name],
                  { superuser: "try", err: "message" })
            .then((out) => {
                const lines = out.split("\n").filter(Boolean).map((line) => {
                    const entry = JSON.parse(line);
                    const message = Array.isArray(entry.MESSAGE) ? String.fromCharCode(...entry.MESSAGE) : entry.MESSAGE;
                    return formatTime(entry.__REALTIME_TIMESTAMP) + " " + message;
                });
                pre.textContent = lines.length ? lines.join("\n")
                    : "(none visible: reading the system journal needs administrative access or the adm group)";
            })
            .catch((ex) => { pre.textContent = "journal: " + ex.message });
}

async function selectPlugin(name) {
    selected = name;
    for (const [n, row] of rows) row.classList.toggle("selected", n === name);
    byId("details").hidden = false;
    try {
        await renderDetails(name);
    } catch (ex) {
        showError("Plugin " + name, ex);
    }
    renderJournal(name);
}

/* ---- jobs ------------------------------------------------------------------------- */

let job = null;

function renderJob(props) {
    Object.assign(job.props, props);
    const p = job.props;
    const state = byId("job-state");
    state.textContent = p.State || "";
    state.className = "state-" + p.State;
    const bar = byId("job-progress");
    if (p.Progress === undefined || p.Progress < 0) {
        bar.removeAttribute("value");
        byId("job-percent").textContent = "";
    } else {
        bar.value = p.Progress;
        byId("job-percent").textContent = Math.round(p.Progress * 100) + " %";
    }
    byId("job-status").textContent = p.StatusText || "";
    byId("job-output").textContent = p.State === "succeeded" ? (p.Output || "") : (p.Error || "");
    byId("job-cancel").disabled = p.State !== "running";
}

async function fetchJob(current) {
    const [all] = await call("GetAll", "s", [JOB_IFACE], current.path, PROPS);
    if (job === current) renderJob(unwrapDict(all));
}

async function startJob(event) {
    event.preventDefault();
    clearError();
    const plugin = byId("job-plugin").value;
    let path;
    try {
        [path] = await call("StartJob", "ss", [plugin, byId("job-input").value]);
    } catch (ex) {
        showError("Run " + plugin, ex);
        return;
    }
    if (job) job.subscription.remove();
    const current = { path, props: {} };
    job = current;
    current.subscription = client.subscribe({ path, interface: PROPS, member: "PropertiesChanged" },
                                            (p, i, m, args) => { if (job === current) renderJob(unwrapDict(args[1])) });
    byId("job-path").textContent = path.split("/").pop() + " (" + plugin + ")";
    byId("job").hidden = false;
    renderJob({ State: "running", Progress: -1 });
    // Read after subscribing, so no change falls between the two.
    fetchJob(current).catch((ex) => showError("Job " + path, ex));
}

async function cancelJob() {
    if (!job) return;
    try {
        await call("Cancel", "", [], job.path, JOB_IFACE);
    } catch (ex) {
        showError("Cancel", ex);
    }
}

/* ---- reload ----------------------------------------------------------------------- */

async function reload() {
    clearError();
    const result = byId("reload-result");
    result.textContent = "reloading…";
    try {
        const [summary] = await call("Reload");
        result.textContent = summary;
    } catch (ex) {
        result.textContent = "";
        showError("Reload", ex);
    }
    await refresh();
}

/* ---- start ------------------------------------------------------------------------ */

function init() {
    byId("reload").addEventListener("click", reload);
    byId("job-form").addEventListener("submit", startJob);
    byId("job-cancel").addEventListener("click", cancelJob);
    client.subscribe({ interface: IFACE, path: MANAGER }, onManagerSignal);
    client.subscribe({ interface: JOB_IFACE, member: "Finished" }, onJobSignal);
    client.addEventListener("close", (event, options) => showError("D-Bus", { message: cockpit.message(options) }));
    watchUnit();
    refresh();
    window.setInterval(refresh, REFRESH_MS);
    cockpit.transport.wait(() => document.body.dataset.ready = "true");
}

init();
