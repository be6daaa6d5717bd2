"""Moved to :mod:`classwise.analysis.tradeoff` (numpy and pandas statistics, no torch); this module
re-exports it so ``from classwise.defenses.tradeoff import ...`` keeps working."""

from classwise.analysis.tradeoff import (
    COLUMNS,
    OBJECTIVES,
    PAIRED_COLUMNS,
    SELECTION_RULE,
    eligible_settings,
    headline_attacks,
    most_vulnerable_class,
    paired_table,
    primary,
    select_setting,
    table_records,
    tradeoff_table,
)

__all__ = ["COLUMNS", "OBJECTIVES", "PAIRED_COLUMNS", "SELECTION_RULE", "eligible_settings", "headline_attacks",
           "most_vulnerable_class", "paired_table", "primary", "select_setting", "table_records", "tradeoff_table"]
