module sovra/goorder

go 1.26.8
