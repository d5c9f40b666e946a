//! `conduit`: the command table (words, flags, help) and the dispatch to
//! [`conduit_cli::commands`]. Exit status: 0 done, 1 failed (for `power`: any server), 2 used
//! wrongly.

use std::process::ExitCode;

use conduit_cli::commands::{self, Args};
use conduit_cli::output::{clean, Format};

/// One command: its words, what it takes, and what runs it.
struct Command {
    name: &'static str,
    usage: &'static str,
    about: &'static str,
    /// `(flag, value name or "" for a switch, help)`.
    flags: &'static [(&'static str, &'static str, &'static str)],
    run: fn(&Args) -> anyhow::Result<ExitCode>,
}

const OUTPUT: (&str, &str, &str) = ("output", "FORMAT", "table (default) or json");

const COMMANDS: &[Command] = &[
    Command {
        name: "login",
        usage: "login [--manager URL] [--ca FILE] [--email E] [--password-stdin | --api-key-stdin]",
        about: "Log in at the manager; the password is asked without echo (or read from stdin)",
        flags: &[
            ("manager", "URL", "the manager (default: the last one, else http://127.0.0.1:8080)"),
            ("ca", "FILE", "CA certificate(s), PEM, trusted for an https manager and gateways"),
            ("email", "EMAIL", "who logs in (asked when not given)"),
            ("password-stdin", "", "read the password from standard input's first line (scripts)"),
            ("api-key-stdin", "", "log in with an API key read from standard input (automation)"),
        ],
        run: commands::login,
    },
    Command {
        name: "logout",
        usage: "logout",
        about: "End the login at the manager (everywhere) and forget it here",
        flags: &[],
        run: commands::logout,
    },
    Command {
        name: "whoami",
        usage: "whoami [--output json]",
        about: "Who is logged in: user, role, customer",
        flags: &[OUTPUT],
        run: commands::whoami,
    },
    Command {
        name: "servers",
        usage: "servers [--customer C] [--unassigned] [--datacenter DC] [--status S] [--output json]",
        about: "The servers you may see (admins: all, or filtered)",
        flags: &[
            ("customer", "ID", "only this customer's (admins)"),
            ("unassigned", "", "only servers no customer owns (admins)"),
            ("datacenter", "DC", "only this datacenter's"),
            ("status", "S", "only active, maintenance or offline ones"),
            OUTPUT,
        ],
        run: commands::servers,
    },
    Command {
        name: "server show",
        usage: "server show SERVER [--output json]",
        about: "One server: inventory, the gateway reaching it, its BMC's identity",
        flags: &[OUTPUT],
        run: commands::server_show,
    },
    Command {
        name: "power",
        usage: "power status|on|off|cycle|reset|soft SERVER... [--output json]",
        about: "Power state or action, on every server given at once; one line each, exit status 1 if any failed",
        flags: &[OUTPUT],
        run: commands::power,
    },
    Command {
        name: "sensors",
        usage: "sensors SERVER [--output json]",
        about: "The BMC's sensor readings (read now)",
        flags: &[OUTPUT],
        run: commands::sensors,
    },
    Command {
        name: "boot",
        usage: "boot SERVER [pxe|disk|cdrom|bios] [--persistent] [--output json]",
        about: "The boot device override: shown, or set (for the next boot; every boot with --persistent)",
        flags: &[("persistent", "", "every boot until changed"), OUTPUT],
        run: commands::boot,
    },
    Command {
        name: "sel",
        usage: "sel SERVER [--clear] [--output json]",
        about: "The BMC's event log, or --clear it",
        flags: &[("clear", "", "clear the log (operators)"), OUTPUT],
        run: commands::sel,
    },
    Command {
        name: "console",
        usage: "console SERVER [--takeover]",
        about: "The serial console in this terminal: ~. leaves, ~B sends BREAK, ~T takes the keyboard, ~? helps",
        flags: &[("takeover", "", "take the keyboard from whoever holds it on arrival")],
        run: commands::console,
    },
    Command {
        name: "vnc",
        usage: "vnc SERVER [--port N]",
        about: "The graphical console for a native VNC viewer: a listener on 127.0.0.1 only your user may use",
        flags: &[("port", "N", "the local port (default: any free one)")],
        run: commands::vnc,
    },
    Command {
        name: "customers",
        usage: "customers [create NAME] [--output json]",
        about: "Customers: listed, or one created (admins)",
        flags: &[OUTPUT],
        run: commands::customers,
    },
    Command {
        name: "users",
        usage: "users [create EMAIL --role R [--customer C] [--name N] [--password-stdin] | disable USER | enable USER] [--customer C] [--output json]",
        about: "Users: listed, created, disabled or enabled (admins)",
        flags: &[
            ("role", "ROLE", "admin, operator or viewer"),
            ("customer", "ID", "the customer of an operator or viewer (and the list's filter)"),
            ("name", "NAME", "display name"),
            ("password-stdin", "", "read the initial password from standard input"),
            OUTPUT,
        ],
        run: commands::users,
    },
    Command {
        name: "assign",
        usage: "assign SERVER CUSTOMER | assign SERVER --none",
        about: "Give a server to a customer, or take it back (admins)",
        flags: &[("none", "", "unassign")],
        run: commands::assign,
    },
    Command {
        name: "gateways",
        usage: "gateways [create ID --datacenter DC [--name N] | revoke ID] [--output json]",
        about: "Gateways: listed, or one created (its credential printed once) or revoked (admins)",
        flags: &[("datacenter", "DC", "the datacenter it serves"), ("name", "NAME", "display name"), OUTPUT],
        run: commands::gateways,
    },
    Command {
        name: "agents",
        usage: "agents [create ID --datacenter DC [--name N] | revoke ID] [--output json]",
        about: "Agents: listed, or one created (its credential printed once) or revoked (admins)",
        flags: &[("datacenter", "DC", "its datacenter"), ("name", "NAME", "display name"), OUTPUT],
        run: commands::agents,
    },
    Command {
        name: "api-keys",
        usage: "api-keys [create NAME [--role R] [--customer C] | revoke KEY] [--output json]",
        about: "Your API keys: listed, created (printed once) or revoked",
        flags: &[
            ("role", "ROLE", "the key's role, at most yours"),
            ("customer", "ID", "the customer an operator or viewer key acts for (admins)"),
            OUTPUT,
        ],
        run: commands::api_keys,
    },
];

fn overview() -> String {
    let mut s = String::from(
        "conduit: Conduit's command line — servers, power, sensors, consoles, administration\n\n\
         Usage: conduit COMMAND [ARGS] [--help]\n\nCommands:\n",
    );
    for c in COMMANDS {
        s.push_str(&format!("  {:<12} {}\n", c.name, c.about));
    }
    s.push_str(
        "\nThe login is kept in $CONDUIT_CONFIG_DIR, else $XDG_CONFIG_HOME/conduit, else\n\
         ~/.config/conduit (session.json, mode 0600) and renewed as it nears its end.\n\
         Operations go to the gateway that reaches the server, as the manager says.\n\
         Start with: conduit login --manager http://127.0.0.1:8080\n\
         conduit help COMMAND (or COMMAND --help) tells more; conduit --version, its version.\n",
    );
    s
}

fn help(c: &Command) -> String {
    let mut s = format!("{}\n\nUsage: conduit {}\n", c.about, c.usage);
    if !c.flags.is_empty() {
        s.push_str("\nFlags:\n");
        for (name, value, about) in c.flags {
            let left = if value.is_empty() {
                format!("--{name}")
            } else {
                format!("--{name} {value}")
            };
            s.push_str(&format!("  {left:<22} {about}\n"));
        }
    }
    s.push_str("  --help                 this help\n");
    s
}

/// Parses a command's arguments against its flags.
fn parse(c: &Command, raw: Vec<std::ffi::OsString>) -> Result<Option<Args>, String> {
    use lexopt::Arg;
    let mut p = lexopt::Parser::from_args(raw);
    let mut args = Args::default();
    loop {
        let next = p.next().map_err(|e| e.to_string())?;
        match next {
            None => return Ok(Some(args)),
            Some(Arg::Short('h')) | Some(Arg::Long("help")) => return Ok(None),
            Some(Arg::Short('o')) if c.flags.iter().any(|f| f.0 == "output") => {
                let v = p.value().map_err(|e| e.to_string())?;
                args.format = Some(Format::parse(&v.to_string_lossy()).map_err(|e| e.to_string())?);
            }
            Some(Arg::Long(name)) => {
                let name = name.to_owned();
                let Some((flag, value, _)) = c.flags.iter().find(|f| f.0 == name) else {
                    return Err(format!(
                        "unknown flag --{name} (see conduit {} --help)",
                        c.name
                    ));
                };
                let v = if value.is_empty() {
                    None
                } else {
                    Some(
                        p.value()
                            .map_err(|e| e.to_string())?
                            .into_string()
                            .map_err(|_| format!("--{name}: not UTF-8"))?,
                    )
                };
                if *flag == "output" {
                    let f = Format::parse(v.as_deref().unwrap_or_default())
                        .map_err(|e| e.to_string())?;
                    args.format = Some(f);
                } else {
                    args.flags.push((flag.to_string(), v));
                }
            }
            Some(Arg::Short(s)) => return Err(format!("unknown flag -{s}")),
            Some(Arg::Value(v)) => args.words.push(
                v.into_string()
                    .map_err(|_| "an argument is not UTF-8".to_owned())?,
            ),
        }
    }
}

fn main() -> ExitCode {
    let mut raw: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let words: Vec<String> = raw
        .iter()
        .take(2)
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    match words.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") if words.len() <= 1 => {
            print!("{}", overview());
            return ExitCode::SUCCESS;
        }
        Some("help") => {
            return match COMMANDS
                .iter()
                .find(|c| c.name.split(' ').next() == Some(&words[1]))
            {
                Some(c) => {
                    print!("{}", help(c));
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("conduit: no command {:?} (see conduit --help)", words[1]);
                    ExitCode::from(2)
                }
            };
        }
        Some("-V" | "--version") => {
            println!("conduit {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    // Two-word commands first (`server show`).
    let two = words.join(" ");
    let (command, taken) = match COMMANDS.iter().find(|c| words.len() == 2 && c.name == two) {
        Some(c) => (c, 2),
        None => match COMMANDS.iter().find(|c| c.name == words[0]) {
            Some(c) => (c, 1),
            None => {
                if words[0] == "server" && words.get(1).is_some_and(|w| w == "--help" || w == "-h")
                {
                    if let Some(c) = COMMANDS.iter().find(|c| c.name == "server show") {
                        print!("{}", help(c));
                        return ExitCode::SUCCESS;
                    }
                }
                let hint = if words[0] == "server" {
                    " (did you mean `conduit server show SERVER`?)"
                } else {
                    ""
                };
                eprintln!(
                    "conduit: no command {:?}{hint}; see conduit --help",
                    words[0]
                );
                return ExitCode::from(2);
            }
        },
    };
    let rest = raw.split_off(taken);
    let args = match parse(command, rest) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{}", help(command));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!(
                "conduit {}: {e}\nUsage: conduit {}",
                command.name, command.usage
            );
            return ExitCode::from(2);
        }
    };
    match (command.run)(&args) {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<commands::Usage>().is_some() => {
            eprintln!(
                "conduit {}: {e}\nUsage: conduit {}",
                command.name, command.usage
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("conduit {}: {}", command.name, clean(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
