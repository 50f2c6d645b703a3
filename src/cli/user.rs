//! `overlord user ...`: API tokens, passwords and revocation for users,
//! in the data file (server stopped). The rules are `overlord::users`',
//! shared with the HTTP API.

use clap::Subcommand;
use overlord::config::Config;
use overlord::store;
use overlord::users;

use super::{offline_store, Advice};

/// `overlord user ...`.
#[derive(Subcommand)]
pub enum UserCmd {
    /// Issue a new API token for a user (creating it if needed); the
    /// previous token works until the next rotation.
    Token {
        /// User name.
        name: String,
        /// Create the user as an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Set a user's password (for the dashboard login), read as one line
    /// from standard input so it stays out of the shell history.
    Password {
        /// User name.
        name: String,
    },
    /// Delete a user (refused while they own devices, channels, alerts or
    /// files, unless --cascade deletes those too); as `DELETE /v1/users/NAME`.
    Delete {
        /// User name.
        name: String,
        /// Delete what they own too.
        #[arg(long)]
        cascade: bool,
    },
    /// Revoke every credential of a user (tokens, password, sessions).
    Revoke {
        /// User name.
        name: String,
    },
}

/// Run one `user` subcommand on the data file (server stopped).
pub fn user(config: &Config, cmd: UserCmd) -> Result<(), String> {
    if let UserCmd::Delete { name, cascade } = &cmd {
        // Through the server's state: the writer removes device readings.
        return super::delete::delete_user(config, name, *cascade);
    }
    let store = offline_store(config, Advice::StopOrHttp)?;
    match cmd {
        UserCmd::Token { name, admin } => {
            // The same rule as `POST /v1/users`: a user's name goes into
            // inbox rows (`from` = `user:NAME`) and CSV listings, so a
            // new one is 1-64 URL-safe characters (never a line break).
            let exists = store
                .load_users()
                .map_err(|e| e.to_string())?
                .iter()
                .any(|u| u.name == name);
            if !exists && (!overlord::auth::valid_id(&name) || name == "anonymous") {
                return Err("a user name is 1-64 of A-Z a-z 0-9 . _ ~ -".into());
            }
            let role = if admin {
                store::Role::Administrator
            } else {
                store::Role::User
            };
            let (_, token) = users::issue_token(&store, &name, role).map_err(|e| e.to_string())?;
            println!("user,token\n{name},{token}");
        }
        UserCmd::Password { name } => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            let pw = line.trim_end_matches(['\r', '\n']);
            if pw.len() < users::MIN_PASSWORD {
                return Err(format!(
                    "a password is at least {} bytes",
                    users::MIN_PASSWORD
                ));
            }
            users::set_password(&store, &name, Some(pw)).map_err(|e| e.to_string())?;
            println!("ok");
        }
        UserCmd::Delete { .. } => unreachable!("handled above"),
        UserCmd::Revoke { name } => {
            users::revoke(&store, &name).map_err(|e| e.to_string())?;
            println!("ok");
        }
    }
    Ok(())
}
