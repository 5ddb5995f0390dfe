"""The union core and app shell: settings, database, accounts, members, policy, audit log, CLI."""
