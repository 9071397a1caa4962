"""The patch rounds' outcome: which of its rounds held."""

from crossfire_ns.localize.patch_rounds import PatchRefinement


def test_the_first_round_held_unless_the_rounds_stopped_at_it():
    round_ = object()  # the rounds' contents do not matter here, only how many ran and whether one failed
    assert not PatchRefinement().first_round_held  # no round ran: nothing held
    assert not PatchRefinement(rounds=[round_], failed="round 1: 30 of 800 patches found").first_round_held
    assert PatchRefinement(rounds=[round_]).first_round_held
    assert PatchRefinement(rounds=[round_, round_], failed="round 2: 97 of 800 patches found").first_round_held
