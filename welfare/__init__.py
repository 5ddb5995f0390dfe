"""Welfare: schemes, eligibility rules, claims, decisions and payouts (see the welfare issue)."""
