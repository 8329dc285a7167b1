from otter.test_files import test_case

OK_FORMAT = False

name = "q4b"
points = 7

@test_case(points=0, hidden=False)
def test_predictions_complete(test_predictions, data):
    import math
    want = set(data.ids('test'))
    assert isinstance(test_predictions, dict) and set(test_predictions) == want, f'test_predictions must map each of the {len(want)} test ids to a prediction'
    assert all((math.isfinite(float(v)) for v in test_predictions.values())), 'predictions must be finite numbers'

@test_case(points=0, hidden=False)
def test_predictions_come_from_the_model(model, test_batches, normalizer, cgcnn_utils):
    import csv, os
    assert os.path.isfile('test_predictions.csv'), 'no test_predictions.csv yet: run the training cell above first'
    with open('test_predictions.csv', newline='') as f:
        saved = {r['id']: float(r['prediction']) for r in csv.DictReader(f)}
    again = cgcnn_utils.predict(model, test_batches, normalizer)
    assert set(saved) == set(again), "test_predictions.csv must hold the trained model's prediction for every test crystal"
    worst = max((abs(saved[k] - again[k]) for k in again))
    assert worst < 0.0001, f"test_predictions.csv is not what the trained model predicts (off by up to {worst:.3g} eV/atom): save the model's own predictions with cgcnn_utils.save_predictions"

@test_case(points=3, hidden=True)
def test_mae_within_twice_the_threshold():
    assert False, "part 4b's test MAE is scored by the grading plugin, which did not run"

@test_case(points=2, hidden=True)
def test_mae_within_one_and_a_half_the_threshold():
    assert False, "part 4b's test MAE is scored by the grading plugin, which did not run"

@test_case(points=2, hidden=True)
def test_mae_within_the_threshold():
    assert False, "part 4b's test MAE is scored by the grading plugin, which did not run"

