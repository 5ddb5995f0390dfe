"""Dues: plans, cash and card payments, member standing, the double-entry ledger, treasurer reports (see the dues issue)."""
