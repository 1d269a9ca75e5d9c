//! Migrations and row-level security against the real PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use centralita_platform::db::{migrate, pool, set_tenant, Migration, Migrations, TENANCY_SQL};
use centralita_platform::tenant::TenantId;
use common::*;

fn schema() -> &'static str {
    Box::leak(unique("t_").into_boxed_str())
}

const NOTES_SQL: &str = r#"
CREATE TABLE notes (tenant_id text NOT NULL, body text NOT NULL);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON notes
  USING (tenant_id = centralita_current_tenant())
  WITH CHECK (tenant_id = centralita_current_tenant());
"#;

#[tokio::test]
async fn migrations_apply_once_and_detect_edits() {
    let schema = schema();
    let steps: &'static [Migration] = Box::leak(Box::new([
        Migration { version: 1, name: "tenancy", sql: TENANCY_SQL },
        Migration { version: 2, name: "notes", sql: NOTES_SQL },
    ]));
    let p = pool(&database_url(), schema, 4).unwrap();
    let m = Migrations { schema, steps };
    assert_eq!(migrate(&p, &m).await.unwrap(), 2);
    assert_eq!(migrate(&p, &m).await.unwrap(), 0, "re-running applies nothing");

    // Two replicas starting together apply each migration once.
    let extended: &'static [Migration] = Box::leak(Box::new([
        steps[0],
        steps[1],
        Migration { version: 3, name: "index", sql: "CREATE INDEX notes_tenant ON notes (tenant_id);" },
    ]));
    let m3 = Migrations { schema, steps: extended };
    let (a, b) = tokio::join!(migrate(&p, &m3), migrate(&p, &m3));
    assert_eq!(a.unwrap() + b.unwrap(), 1);

    let edited: &'static [Migration] =
        Box::leak(Box::new([steps[0], Migration { version: 2, name: "notes", sql: "CREATE TABLE notes (x int);" }]));
    let err = migrate(&p, &Migrations { schema, steps: edited }).await.unwrap_err();
    assert!(err.to_string().contains("was changed after it was applied"), "{err}");

    let older: &'static [Migration] = Box::leak(Box::new([steps[0]]));
    let err = migrate(&p, &Migrations { schema, steps: older }).await;
    assert!(err.is_ok(), "an older binary may still run against a migrated schema's known steps");
}

#[tokio::test]
async fn row_level_security_keys_on_the_tenant() {
    let schema = schema();
    let steps: &'static [Migration] = Box::leak(Box::new([
        Migration { version: 1, name: "tenancy", sql: TENANCY_SQL },
        Migration { version: 2, name: "notes", sql: NOTES_SQL },
    ]));
    let p = pool(&database_url(), schema, 4).unwrap();
    migrate(&p, &Migrations { schema, steps }).await.unwrap();
    let (acme, globex) = (TenantId::parse("acme").unwrap(), TenantId::parse("globex").unwrap());

    let mut c = p.get().await.unwrap();
    for (t, body) in [(&acme, "a1"), (&acme, "a2"), (&globex, "g1")] {
        let tx = c.transaction().await.unwrap();
        set_tenant(&tx, t).await.unwrap();
        tx.execute("INSERT INTO notes VALUES ($1, $2)", &[&t.as_str(), &body]).await.unwrap();
        tx.commit().await.unwrap();
    }
    // Writing another tenant's row is refused by the policy.
    let tx = c.transaction().await.unwrap();
    set_tenant(&tx, &acme).await.unwrap();
    assert!(tx.execute("INSERT INTO notes VALUES ('globex', 'sneaky')", &[]).await.is_err());
    drop(tx);

    let count = |rows: Vec<tokio_postgres::Row>| rows.len();
    let tx = c.transaction().await.unwrap();
    set_tenant(&tx, &acme).await.unwrap();
    assert_eq!(count(tx.query("SELECT body FROM notes", &[]).await.unwrap()), 2);
    tx.commit().await.unwrap();
    let tx = c.transaction().await.unwrap();
    set_tenant(&tx, &globex).await.unwrap();
    assert_eq!(count(tx.query("SELECT body FROM notes WHERE tenant_id = 'acme'", &[]).await.unwrap()), 0);
    tx.commit().await.unwrap();
    // No tenant set: nothing visible.
    assert_eq!(count(c.query("SELECT body FROM notes", &[]).await.unwrap()), 0);
}
