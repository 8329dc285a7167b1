from otter.test_files import test_case

OK_FORMAT = False

name = "q4b"
points = 7

@test_case(points=1, hidden=False)
def test_predictions_complete(test_predictions, data):
    import math
    want = set(data.ids('test'))
    assert isinstance(test_predictions, dict) and set(test_predictions) == want, f'test_predictions must map each of the {len(want)} test ids to a prediction'
    assert all((math.isfinite(float(v)) for v in test_predictions.values())), 'predictions must be finite numbers'

@test_case(points=2, hidden=True)
def test_mae_within_twice_the_threshold(test_predictions):
    import csv, math
    with open('test_labels.csv') as f:
        labels = {r['id']: float(r['formation_energy_per_atom']) for r in csv.DictReader(f)}
    assert set(test_predictions or {}) >= set(labels), 'no prediction for some test crystals'
    err = sum((abs(float(test_predictions[i]) - y) for i, y in labels.items())) / len(labels)
    assert math.isfinite(err) and err <= 2.0 * 0.09, f'test MAE {err:.3f} eV/atom > {2.0 * 0.09:.3f}'

@test_case(points=2, hidden=True)
def test_mae_within_one_and_a_half_the_threshold(test_predictions):
    import csv, math
    with open('test_labels.csv') as f:
        labels = {r['id']: float(r['formation_energy_per_atom']) for r in csv.DictReader(f)}
    assert set(test_predictions or {}) >= set(labels), 'no prediction for some test crystals'
    err = sum((abs(float(test_predictions[i]) - y) for i, y in labels.items())) / len(labels)
    assert math.isfinite(err) and err <= 1.5 * 0.09, f'test MAE {err:.3f} eV/atom > {1.5 * 0.09:.3f}'

@test_case(points=2, hidden=True)
def test_mae_within_the_threshold(test_predictions):
    import csv, math
    with open('test_labels.csv') as f:
        labels = {r['id']: float(r['formation_energy_per_atom']) for r in csv.DictReader(f)}
    assert set(test_predictions or {}) >= set(labels), 'no prediction for some test crystals'
    err = sum((abs(float(test_predictions[i]) - y) for i, y in labels.items())) / len(labels)
    assert math.isfinite(err) and err <= 0.09, f'test MAE {err:.3f} eV/atom > {0.09:.3f}'

