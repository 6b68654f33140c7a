//! `steward people password`: sets the password a person of the people file signs in with at
//! the development IdP. Run by whoever operates the embedded default (it writes to the data
//! directory); the person then proves who they are with it, nobody types a name for them.

use anyhow::{Context, bail};
use shared::ports::Directory;
use shared::secret::Secret;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Subcommand)]
pub enum PeopleCmd {
    /// Set a person's password (read without echo at a terminal, else the first line of stdin).
    Password {
        /// The person's e-mail address, as in the people file.
        email: String,
        /// Make up a strong password and print it once, instead of reading one.
        #[arg(long)]
        generate: bool,
        #[arg(long, env = "STEWARD_DATA_DIR", default_value = ".steward")]
        data_dir: PathBuf,
        #[arg(long, env = "STEWARD_PEOPLE", default_value = "people.example.toml")]
        people: PathBuf,
    },
}

pub async fn people(cmd: PeopleCmd) -> anyhow::Result<()> {
    match cmd {
        PeopleCmd::Password {
            email,
            generate,
            data_dir,
            people,
        } => set_password(&email, generate, &data_dir, &people).await,
    }
}

/// A generated password: 20 characters of an unambiguous alphabet (about 110 bits).
pub fn generated_password() -> Secret {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    Secret::new(
        (0..20)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect::<String>(),
    )
}

async fn set_password(
    email: &str,
    generate: bool,
    data_dir: &std::path::Path,
    people: &std::path::Path,
) -> anyhow::Result<()> {
    let directory = shared::people_file::PeopleFileDirectory::load(people)?;
    let person = directory.person(email).await?;
    match person {
        Some(p) if p.active => {}
        Some(_) => bail!(
            "{email} is inactive in {}: a departed person gets no password",
            people.display()
        ),
        None => bail!("{email} is not in the people file {}", people.display()),
    }
    let password = if generate {
        generated_password()
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("New password for {email}: "))?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            bail!("the two passwords differ; nothing changed");
        }
        Secret::new(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        Secret::new(line.trim_end_matches(['\r', '\n']).to_string())
    };
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let db = Arc::new(shared::embedded::sqlite::Db::open(
        &data_dir.join("steward.db"),
        shared::embedded::Durability::Fsync,
    )?);
    let idp = shared::idp::dev::DevIdp::open(db, &data_dir.join("idp-signing-key.pem"), "")?;
    let replaced = idp.has_password(email)?;
    idp.set_password(email, &password, chrono::Utc::now())?;
    if generate {
        println!("{}", password.expose());
        eprintln!("(shown once: {email} signs in with it at `steward login`)");
    } else {
        eprintln!(
            "password {} for {email}; they sign in with `steward login`",
            if replaced { "replaced" } else { "set" }
        );
    }
    Ok(())
}
