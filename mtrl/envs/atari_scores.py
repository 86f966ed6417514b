"""Random-agent and human reference scores of the Atari-57 games, and human-normalized scores.

**Source.** The table below is DQN Zoo's ``dqn_zoo/atari_data.py`` (repository
``google-deepmind/dqn_zoo``, commit ``45061f4bbbcfa87d11bbba3cfc2305a650a41c26``), converted
mechanically to mtrl's game names; its values were not retyped. DQN Zoo describes them as the
scores of a uniformly random agent and of a professional human game tester on each of the 57
games, averaged over episodes that start after 1–30 no-op actions and are capped at 108,000
frames. They are the reference scores of the Atari-57 literature, as tabulated ("Random",
"Average Human") by Badia et al. 2020, *Agent57: Outperforming the Atari Human Benchmark*,
Appendix H; Hessel et al. 2019 (*Multi-task deep reinforcement learning with PopArt*) report
median human-normalized scores over the same 57 games.

Cross-checks made when the table was added: all 57 (random, human) pairs agree with a second,
independent copy (the Atari-57 table of the CleanRL lineage, ``atari_human_normalized_scores``
in an rliable plotting script), and 15 games (Berzerk, Bowling, DemonAttack, Enduro,
FishingDerby, Frostbite, Gravitar, Kangaroo, NameThisGame, Phoenix, Qbert, Seaquest,
SpaceInvaders, StarGunner, TimePilot) agree with the rounded Agent57 values reprinted in Table 3
of PMC8550197 (Autonomous Agents and Multi-Agent Systems 35:17, 2021).

Note on Video Pinball: the random score (16256.9) is close to the human one (17667.9), so small
score differences give large normalized differences there.

The human-normalized score (HNS) of a game score ``s`` is ``(s − random) / (human − random)``:
0 is random play, 1 is the human tester. Benchmarks report the median (and mean) HNS over games.
"""

from __future__ import annotations

import math

import numpy as np

# game (mtrl's CamelCase name) -> (random score, human score)
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "Alien": (227.8, 7127.7),
    "Amidar": (5.8, 1719.5),
    "Assault": (222.4, 742.0),
    "Asterix": (210.0, 8503.3),
    "Asteroids": (719.1, 47388.7),
    "Atlantis": (12850.0, 29028.1),
    "BankHeist": (14.2, 753.1),
    "BattleZone": (2360.0, 37187.5),
    "BeamRider": (363.9, 16926.5),
    "Berzerk": (123.7, 2630.4),
    "Bowling": (23.1, 160.7),
    "Boxing": (0.1, 12.1),
    "Breakout": (1.7, 30.5),
    "Centipede": (2090.9, 12017.0),
    "ChopperCommand": (811.0, 7387.8),
    "CrazyClimber": (10780.5, 35829.4),
    "Defender": (2874.5, 18688.9),
    "DemonAttack": (152.1, 1971.0),
    "DoubleDunk": (-18.6, -16.4),
    "Enduro": (0.0, 860.5),
    "FishingDerby": (-91.7, -38.7),
    "Freeway": (0.0, 29.6),
    "Frostbite": (65.2, 4334.7),
    "Gopher": (257.6, 2412.5),
    "Gravitar": (173.0, 3351.4),
    "Hero": (1027.0, 30826.4),
    "IceHockey": (-11.2, 0.9),
    "Jamesbond": (29.0, 302.8),
    "Kangaroo": (52.0, 3035.0),
    "Krull": (1598.0, 2665.5),
    "KungFuMaster": (258.5, 22736.3),
    "MontezumaRevenge": (0.0, 4753.3),
    "MsPacman": (307.3, 6951.6),
    "NameThisGame": (2292.3, 8049.0),
    "Phoenix": (761.4, 7242.6),
    "Pitfall": (-229.4, 6463.7),
    "Pong": (-20.7, 14.6),
    "PrivateEye": (24.9, 69571.3),
    "Qbert": (163.9, 13455.0),
    "Riverraid": (1338.5, 17118.0),
    "RoadRunner": (11.5, 7845.0),
    "Robotank": (2.2, 11.9),
    "Seaquest": (68.4, 42054.7),
    "Skiing": (-17098.1, -4336.9),
    "Solaris": (1236.3, 12326.7),
    "SpaceInvaders": (148.0, 1668.7),
    "StarGunner": (664.0, 10250.0),
    "Surround": (-10.0, 6.5),
    "Tennis": (-23.8, -8.3),
    "TimePilot": (3568.0, 5229.2),
    "Tutankham": (11.4, 167.6),
    "UpNDown": (533.4, 11693.2),
    "Venture": (0.0, 1187.5),
    "VideoPinball": (16256.9, 17667.9),
    "WizardOfWor": (563.5, 4756.5),
    "YarsRevenge": (3092.9, 54576.9),
    "Zaxxon": (32.5, 9173.3),
}


def has_reference(game: str) -> bool:
    """Whether ``game`` (a CamelCase game name) is one of the 57 games with reference scores."""
    return game in REFERENCE_SCORES


def human_normalized_score(game: str, score: float) -> float:
    """``(score − random) / (human − random)`` for one of the 57 games (CamelCase name, e.g.
    ``SpaceInvaders``). Games that ale_py ships but that are not in Atari-57 have no reference
    scores: their HNS is NaN (so that training on them still works; aggregates skip them)."""
    if game not in REFERENCE_SCORES:
        from mtrl.envs.atari import available_games

        if game in available_games():
            return math.nan
        raise KeyError(f"unknown Atari game {game!r}; the 57 games with reference scores: "
                       + ", ".join(REFERENCE_SCORES))
    random, human = REFERENCE_SCORES[game]
    return (float(score) - random) / (human - random)


def summarize(scores: dict[str, float]) -> dict[str, object]:
    """Per-game HNS and their median and mean over games.

    ``scores`` maps game names to game scores (e.g. each game's mean evaluation return).
    Returns ``{"hns": {game: hns}, "median": m, "mean": m, "num_games": n}``, where the median
    and mean run over the ``n`` games that have reference scores (NaN when there are none).
    """
    hns = {g: human_normalized_score(g, s) for g, s in scores.items()}
    finite = [h for h in hns.values() if not math.isnan(h)]
    return {
        "hns": hns,
        "median": float(np.median(finite)) if finite else math.nan,
        "mean": float(np.mean(finite)) if finite else math.nan,
        "num_games": len(finite),
    }
