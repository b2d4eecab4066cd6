"""Everything that reads finished run folders and never trains: statistics, tables, figures, the
HTML report, diagnostics, and the Learning Loss and EGL++ analyses."""
