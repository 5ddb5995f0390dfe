"""Crisis response: hotline intake, teams, dispatch, push alerts, incidents and case notes (see the crisis issue)."""
