//! The README's configuration table documents every flag of every service, with its
//! environment variable and default, as the code defines them.

use clap::CommandFactory;

#[test]
fn readme_lists_every_flag_with_its_env_var_and_default() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `--")).collect();
    let services = [
        ("command", command::Config::command()),
        ("processor", processor::Config::command()),
        ("materializer", materializer::Config::command()),
        ("query", query::Config::command()),
    ];
    let mut missing = Vec::new();
    for (name, cmd) in services {
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            let default = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",");
            let row = rows
                .iter()
                .find(|r| r.contains(&format!("`--{long}`")) && r.contains(&format!("`{env}`")));
            match row {
                None => missing.push(format!("{name}: --{long} / {env}")),
                Some(r) => {
                    let cells: Vec<&str> = r.split('|').map(str::trim).collect();
                    let listed_default = cells.get(3).copied().unwrap_or("");
                    let in_services = cells.get(4).copied().unwrap_or("");
                    let default_ok = if default.is_empty() {
                        listed_default == "none"
                    } else if long == "listen" {
                        let port = default.rsplit(':').next().unwrap();
                        listed_default.contains(port)
                    } else {
                        listed_default == format!("`{default}`")
                    };
                    if !default_ok {
                        missing.push(format!(
                            "{name}: --{long} default {default:?}, README says {listed_default:?}"
                        ));
                    }
                    if in_services != "all" && !in_services.contains(name) {
                        missing.push(format!("{name}: --{long} not listed for {name}"));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README configuration table is out of date:\n{}",
        missing.join("\n")
    );
}
