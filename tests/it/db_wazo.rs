//! The DB job on a database shaped like Wazo's `asterisk` (fixtures/db/wazo-asterisk.sql:
//! about 120 tables, enum types, owned sequences, pgcrypto / uuid-ossp / unaccent, the
//! circular foreign key tenant <-> endpoint_sip), replicated with the excluded tables
//! of profiles/wazo.toml; the slave's rows in those tables survive.

use crate::db::json_of;
use crate::pg::{PG_BIN, Pg};
use crate::util::{hasync, text};
use std::path::Path;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/db")
            .join(name),
    )
    .unwrap()
}

fn db_section(pg: &Pg, db: &str, exclude: &[String]) -> String {
    format!(
        "[db]\nkind = \"postgres\"\ndatabase = \"{db}\"\nuser = \"postgres\"\nhost = \"{}\"\n\
         port = {}\nbin_dir = \"{PG_BIN}\"\nexclude_tables = {exclude:?}\n",
        pg.sock.display(),
        pg.port
    )
}

/// Every row of `table`, sorted (ORDER BY 1 leaves ties in any order).
fn rows(pg: &Pg, db: &str, table: &str) -> Vec<String> {
    let mut v: Vec<String> = pg.table(db, table).lines().map(str::to_string).collect();
    v.sort();
    v
}

fn tables(pg: &Pg, db: &str) -> Vec<String> {
    pg.sql(
        db,
        "SELECT relname FROM pg_class WHERE relkind = 'r' \
         AND relnamespace = 'public'::regnamespace ORDER BY 1",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn db_wazo_shaped_asterisk_database_replicates_with_wazos_excluded_tables() {
    let wazo = hasync::node::config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/wazo.toml"),
    )
    .unwrap();
    let exclude = wazo.db.expect("the Wazo profile has [db]").exclude_tables;
    assert_eq!(exclude.len(), 15, "{exclude:?}");
    let (m, s, db) = (Pg::master(), Pg::slave(), "t_wazo");
    for pg in [m, s] {
        pg.create_db(db);
        pg.sql(db, &fixture("wazo-asterisk.sql"));
    }
    m.sql(db, &fixture("wazo-asterisk-data.sql"));
    // The slave's own call logs, statistics, network settings: never replicated.
    s.sql(
        db,
        "INSERT INTO call_log (source_name) SELECT 'slave-' || g FROM generate_series(1, 7) g;
         INSERT INTO cel (eventtype) VALUES ('slave-cel');
         INSERT INTO netiface (ifname, address) VALUES ('eth0', '10.0.0.2');
         INSERT INTO stat_queue (name) VALUES ('slave-q');
         INSERT INTO session VALUES ('s1234567890123456789012345678901', 1, 2, 'x');",
    );
    let all = tables(m, db);
    assert!(all.len() >= 115, "{} tables", all.len());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("slave.toml"),
        format!(
            "[node]\nrole = \"slave\"\npeer = \"local\"\nstate_dir = \"s\"\n\n{}",
            db_section(s, db, &exclude)
        ),
    )
    .unwrap();
    let master = dir.path().join("master.toml");
    std::fs::write(
        &master,
        format!(
            "[node]\nrole = \"master\"\npeer = \"local\"\npeer_config = \"slave.toml\"\nstate_dir = \"m\"\n\n{}",
            db_section(m, db, &exclude)
        ),
    )
    .unwrap();
    let before: Vec<String> = exclude.iter().map(|t| s.table(db, t)).collect();
    let run = || {
        let o = hasync()
            .arg("--config")
            .arg(&master)
            .args(["db-replicate", "--json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        json_of(&o)
    };
    let j = run();
    assert_eq!(j["outcome"], "replayed", "{j}");
    assert_eq!(j["verify"]["ok"], true, "{j}");
    let replicated: Vec<&String> = all.iter().filter(|t| !exclude.contains(t)).collect();
    assert_eq!(j["tables"], replicated.len() as u64, "{j}");
    for t in &replicated {
        assert_eq!(rows(m, db, t), rows(s, db, t), "table {t} differs");
    }
    for seq in [
        "userfeatures_id_seq",
        "asterisk_file_variable_id_seq",
        "provisioning_serial",
    ] {
        assert_eq!(m.sequence(db, seq), s.sequence(db, seq), "sequence {seq}");
    }
    // The cycle arrived whole: every tenant's template is one of its endpoints.
    assert_eq!(
        s.sql(db, "SELECT count(*) FROM tenant t JOIN endpoint_sip e ON e.uuid = t.global_sip_template_uuid AND e.tenant_uuid = t.uuid").trim(),
        "2"
    );
    let after: Vec<String> = exclude.iter().map(|t| s.table(db, t)).collect();
    assert_eq!(before, after, "an excluded table changed on the slave");
    assert!(after[0].contains("slave-7"), "{after:?}");
    // The slave's sequences of excluded tables are its own (call_log_id_seq at 7).
    assert_eq!(s.sequence(db, "call_log_id_seq").trim(), "7|t");
    assert_eq!(run()["outcome"], "unchanged");
    // A change on the master travels as a patch.
    m.sql(
        db,
        "UPDATE userfeatures SET firstname = 'Zoé' WHERE id = 42",
    );
    let j = run();
    assert_eq!(
        (j["outcome"].as_str(), j["shipped_as"].as_str()),
        (Some("replayed"), Some("patch")),
        "{j}"
    );
    assert_eq!(rows(m, db, "userfeatures"), rows(s, db, "userfeatures"));
}
