{{ header }}
//! PostgreSQL: the connection pool and the migrations of the outbox and
//! the inbox, applied at start-up.

pub use ::deadpool_postgres::Pool;

/// Environment variable with the database URL.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";
/// The URL used when [`DATABASE_URL_ENV`] is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The SQL migrations, in order.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_outbox", include_str!("../migrations/0001_outbox.sql")),
    ("0002_inbox", include_str!("../migrations/0002_inbox.sql")),
];

/// An arbitrary, fixed advisory lock id: concurrent starts migrate one at a time.
const MIGRATION_LOCK: i64 = 0x6576_6765_6e00;

impl ::std::convert::From<::tokio_postgres::Error> for crate::Error {
    fn from(e: ::tokio_postgres::Error) -> Self {
        crate::Error::Database(e.to_string())
    }
}

impl ::std::convert::From<::deadpool_postgres::PoolError> for crate::Error {
    fn from(e: ::deadpool_postgres::PoolError) -> Self {
        crate::Error::Database(e.to_string())
    }
}

/// A connection pool of `size` connections to `url` (no TLS).
pub fn pool(url: &str, size: usize) -> Result<Pool, crate::Error> {
    let config: ::tokio_postgres::Config = url.parse()?;
    let manager = ::deadpool_postgres::Manager::from_config(
        config,
        ::tokio_postgres::NoTls,
        ::deadpool_postgres::ManagerConfig {
            recycling_method: ::deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| crate::Error::Database(e.to_string()))
}

/// Apply the migrations that have not run yet; safe to call from several
/// instances at once.
pub async fn migrate(pool: &Pool) -> Result<(), crate::Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS evgen_migrations (
            name text PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    for (name, sql) in MIGRATIONS {
        let done = tx
            .query_opt("SELECT 1 FROM evgen_migrations WHERE name = $1", &[name])
            .await?
            .is_some();
        if !done {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO evgen_migrations (name) VALUES ($1)", &[name])
                .await?;
            ::tracing::info!(migration = name, "applied");
        }
    }
    tx.commit().await?;
    Ok(())
}
