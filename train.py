"""`python train.py [experiment=NAME] [key=value ...]`: see conf/train.yaml and README.md."""

from lsgtrain.train import main

if __name__ == "__main__":
    main()
