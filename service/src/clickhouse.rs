//! Where ClickHouse is and how to log in: the same flags (and environment
//! variables) for every binary that reads or writes it, flattened into its
//! own configuration.

/// ClickHouse connection settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP URL.
    #[arg(
        id = "clickhouse_url",
        long = "clickhouse-url",
        value_name = "CLICKHOUSE_URL",
        env = "RALLYPOINT_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    pub url: String,

    #[arg(
        id = "clickhouse_user",
        long = "clickhouse-user",
        value_name = "CLICKHOUSE_USER",
        env = "RALLYPOINT_CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,

    #[arg(
        id = "clickhouse_password",
        long = "clickhouse-password",
        value_name = "CLICKHOUSE_PASSWORD",
        env = "RALLYPOINT_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: crate::secret::Secret,

    #[arg(
        id = "clickhouse_database",
        long = "clickhouse-database",
        value_name = "CLICKHOUSE_DATABASE",
        env = "RALLYPOINT_CLICKHOUSE_DATABASE",
        default_value = "default"
    )]
    pub database: String,
}
