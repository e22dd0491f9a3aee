"""Human verification (`maple-data review`): server and page, previews, statistics, Label Studio."""
